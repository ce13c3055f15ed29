r"""VQ-VAE convolutional encoder/decoder of the scalar-field codec (AION-1 paper §4.4.2; van den Oord et al. 2017).

With ``n`` resampling steps, output width ``D`` of the encoder and ``R`` hidden channels in the residual layers::

    Encoder2d: n x [conv4x4/2, ReLU]  (in -> D/2^(n-1) -> ... -> D/2 -> D)
               conv3x3(D -> D), ResBlock(D)                                 (B, in, H, W) -> (B, D, H/2^n, W/2^n)
    Decoder2d: convT3x3(in -> D), ResBlock(D),
               n x [ReLU, convT4x4/2]  (D -> D/2^(n-1) -> ... -> D/2 -> out)  (B, in, h, w) -> (B, out, h 2^n, w 2^n)

(the decoder's widths after the first upsampling, D / 2^(n-1) then rising to D / 2, are those of the released
checkpoint), and the residual layer

.. math:: \mathrm{ResLayer}(x) = x + W_{1\times1}\,\mathrm{ReLU}(\mathrm{BN}(W_{3\times3}\,\mathrm{ReLU}(x))).

Positions inside the ``nn.Sequential`` containers are fixed by the checkpoint keys (``encoder.net.7.net.0.net.1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Decoder2d", "Encoder2d", "ResBlock", "ResLayer"]


class ResLayer(nn.Module):
    """Residual layer (see the module docstring); ``net`` positions 1 = conv3x3, 2 = BatchNorm, 4 = conv1x1.

    Args:
        in_dims: input channels (also the output channels of the residual sum).
        out_dims: output channels of the 1x1 convolution; must equal ``in_dims``.
        hidden_dims: channels between the two convolutions.
    """

    def __init__(self, in_dims: int, out_dims: int, hidden_dims: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(in_dims, hidden_dims, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(hidden_dims),
            nn.ReLU(),
            nn.Conv2d(hidden_dims, out_dims, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x: Tensor) -> Tensor:
        _, conv_3x3, norm, _, conv_1x1 = self.net
        inplace = not torch.is_grad_enabled()
        h = F.relu(norm(conv_3x3(F.relu(x))), inplace=inplace)
        h = conv_1x1(h)
        return h.add_(x) if inplace else x + h


class ResBlock(nn.Module):
    """``num_res_layers`` residual layers in sequence, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_dims: int, out_dims: int, hidden_dims: int, num_res_layers: int):
        super().__init__()
        self.net = nn.Sequential(*(ResLayer(in_dims, out_dims, hidden_dims) for _ in range(num_res_layers)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _widths(top: int, steps: int) -> list[int]:
    """``[top / 2^(steps-1), ..., top / 2]``: the intermediate widths of the resampling stacks."""
    return [top // 2**i for i in range(steps - 1, 0, -1)]


class Encoder2d(nn.Module):
    """Strided-convolution encoder (see the module docstring).

    Args:
        in_dims: input channels.
        out_dims: output channels D.
        res_hidden_dims: hidden channels R of the residual layers.
        num_res_layers: residual layers at the bottleneck.
        num_downsamples: 2x downsamplings n.
    """

    def __init__(
        self, in_dims: int, out_dims: int, res_hidden_dims: int, num_res_layers: int, num_downsamples: int = 3
    ):
        super().__init__()
        dims = [in_dims, *_widths(out_dims, num_downsamples), out_dims]
        layers: list[nn.Module] = []
        for dim_in, dim_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Conv2d(dim_in, dim_out, kernel_size=4, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(
            *layers,
            nn.Conv2d(out_dims, out_dims, kernel_size=3, stride=1, padding=1),
            ResBlock(out_dims, out_dims, res_hidden_dims, num_res_layers),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dims, H, W) -> (B, out_dims, H / 2^n, W / 2^n)."""
        return self.net(x)


class Decoder2d(nn.Module):
    """Transposed-convolution decoder (see the module docstring).

    Args:
        in_dims: latent channels.
        out_dims: output channels.
        hidden_dims: channels D after the first convolution.
        res_hidden_dims: hidden channels R of the residual layers.
        num_res_layers: residual layers after the first convolution.
        num_upsamples: 2x upsamplings n.
    """

    def __init__(
        self,
        in_dims: int,
        out_dims: int,
        hidden_dims: int,
        res_hidden_dims: int,
        num_res_layers: int,
        num_upsamples: int = 3,
    ):
        super().__init__()
        dims = [hidden_dims, *_widths(hidden_dims, num_upsamples), out_dims]
        layers: list[nn.Module] = []
        for dim_in, dim_out in zip(dims[:-1], dims[1:]):
            layers += [nn.ReLU(inplace=True), nn.ConvTranspose2d(dim_in, dim_out, kernel_size=4, stride=2, padding=1)]
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_dims, hidden_dims, kernel_size=3, stride=1, padding=1),
            ResBlock(hidden_dims, hidden_dims, res_hidden_dims, num_res_layers),
            *layers,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dims, h, w) -> (B, out_dims, h 2^n, w 2^n)."""
        return self.net(x)
