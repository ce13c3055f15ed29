"""Realistic AION-1 shapes for the benchmarks (sizes of real survey cut-outs and spectra)."""

from __future__ import annotations

import math

import torch

from aion_fast.model import BASE_ARCHITECTURE

#: Batch sizes per benchmark: CPU runs stay short; GPU runs use survey-job batches.
BATCH = {"cpu": 8, "cuda": 256}

IMAGE_SIZE = 96  # the codec's crop; MMU Legacy Survey cut-outs are 160x160 and get cropped
LEGACY_BANDS = ["DES-G", "DES-R", "DES-I", "DES-Z"]
HSC_BANDS = ["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"]
DESI_PIXELS = 7781  # 3600-9824 A at 0.8 A
SDSS_PIXELS = (3840, 4646)
IMAGE_TOKENS = 576
SPECTRUM_TOKENS = 273

#: Base-size codec and transformer configurations (the published aion-base sizes).
IMAGE_CODEC = {"quantizer_levels": [7, 5, 5, 5, 5], "hidden_dims": 512, "n_compressions": 2, "num_consecutive": 4}
SPECTRUM_CODEC = {
    "encoder_dims": [96, 192, 384, 768],
    "decoder_dims": [384, 192, 96, 1],
    "latent_channels": 768,
    "embedding_dim": 10,
    "dim": 10,
}
TRANSFORMER_BASE = BASE_ARCHITECTURE


def legacy_images(batch: int, size: int = 160, seed: int = 0) -> torch.Tensor:
    """(batch, 4, size, size) Legacy-Survey-like flux: sky noise plus a Gaussian galaxy of 1-10 nanomaggies."""
    g = torch.Generator().manual_seed(seed)
    flux = torch.randn(batch, 4, size, size, generator=g) * 0.02
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    peak = torch.rand(batch, 4, 1, 1, generator=g) * 9 + 1
    width = torch.rand(batch, 1, 1, 1, generator=g) * 4 + 2
    return flux + peak * torch.exp(-r2 / (2 * width**2))


def desi_spectra(batch: int, pixels: int = DESI_PIXELS, seed: int = 0) -> dict[str, torch.Tensor]:
    """DESI-like (batch, pixels) spectra on the 0.8 A grid from 3600 A: continuum, lines, noise, a few bad pixels."""
    g = torch.Generator().manual_seed(seed)
    wavelength = (3600.0 + 0.8 * torch.arange(pixels, dtype=torch.float32)).expand(batch, pixels).contiguous()
    continuum = 2 + torch.sin(wavelength / 700) + torch.rand(batch, 1, generator=g)
    line = 5 * torch.exp(-((wavelength - 6563 * (1 + 0.1 * torch.rand(batch, 1, generator=g))) ** 2) / 20)
    ivar = torch.full((batch, pixels), 4.0)
    flux = continuum + line + torch.randn(batch, pixels, generator=g) / ivar.sqrt()
    mask = torch.rand(batch, pixels, generator=g) < 0.01
    return {"flux": flux, "ivar": ivar, "mask": mask, "wavelength": wavelength}


def random_tokens(domains: dict[str, tuple[int, int]], batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids per token key: domains maps key -> (num_tokens, vocab)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, v, (batch, n), generator=g) for k, (n, v) in domains.items()}


def tokens_per_object(domains: dict[str, tuple[int, int]]) -> int:
    return int(math.fsum(n for n, _ in domains.values()))


#: Latent grid of the spectrum codec (AION-1: 3500 A + 0.8 A k, k < 8704).
SPECTRUM_GRID = {"lambda_min": 3500.0, "resolution": 0.8, "num_pixels": 8704}
#: FSQ / LFQ latent widths of the image and spectrum codecs.
FSQ_LEVELS = [7, 5, 5, 5, 5]
LFQ_DIM = 10
