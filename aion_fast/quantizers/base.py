"""The interface every quantizer implements: continuous latents in, integer codebook indices out, and back."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Quantizer(nn.Module, ABC):
    """Maps continuous latents to integer indices of a finite codebook and back.

    ``encode`` returns int64 indices (the token ids the transformer embeds), ``decode`` returns the codebook vectors,
    ``quantize`` is ``decode(encode(x))`` (with straight-through gradients where it is differentiable) and ``forward``
    is the training entry point that also returns a loss and the fraction of the codebook in use.
    """

    @abstractmethod
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Returns the int64 codebook index of each latent."""

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Returns the codebook vector of each index."""

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Returns the codebook vector nearest to each latent."""
        return self.decode(self.encode(z))

    @abstractmethod
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward: returns (quantized latents, auxiliary loss, fraction of codes used)."""

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Number of distinct indices."""

    @property
    def embedding_dim(self) -> int:
        """Dimension of one codebook vector."""
        return 1
