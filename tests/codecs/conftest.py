"""Fixtures of the codec tests: reference codecs with random weights saved in the hub layout, and realistic inputs.

Image and scalar-field fixtures carry an ``image_`` / ``segmap_`` prefix.
"""

from __future__ import annotations

import math

import pytest
import torch

# ----------------------------------------------------------------------------------------------------- image codec

#: Small image codec for the default test run (base size: hidden_dims=512, num_consecutive=4, in the slow tests).
IMAGE_SMALL_CONFIG = {"quantizer_levels": [7, 5, 5, 5, 5], "hidden_dims": 32, "n_compressions": 2, "num_consecutive": 1}


def image_randomize_reference(codec: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Makes a freshly initialised reference image codec a sensitive test subject.

    At initialisation the squeeze-excite gates are constant (~4.5e-5: zero weights, bias -10), so that path would
    not influence tokens; they get random weights. The pre-quantization projection is scaled up so that latents
    spread over many FSQ levels (~100 distinct tokens per batch, some within 1e-5 of a rounding boundary).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in codec.modules():
            if type(module).__name__ == "SqueezeExcite":
                gate = module.net[2]
                gate.weight.copy_(torch.randn(gate.weight.shape, generator=generator) * 0.3)
                gate.bias.copy_(torch.randn(gate.bias.shape, generator=generator))
        codec.pre_quant_proj.weight.mul_(4.0)
    return codec.eval()


def image_make_flux(batch: int, bands: list[str], height: int = 96, width: int = 96, seed: int = 0) -> torch.Tensor:
    """Survey-like cut-outs (B, C, H, W), float32.

    Sky noise N(0, sigma^2) with sigma in [0.01, 0.05] plus 1-3 elliptical Sersic galaxies (index 0.5-4, half-light
    radius 1.5-8 px, peak 1-10) near the centre, with random per-band colours, in nanomaggies for the Legacy Survey
    and 100x larger for HSC (zero-point 27). Peaks exceed some per-band clip bounds, so clipping is exercised.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape or (1,), generator=generator)

    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    channels = len(bands)
    flux = torch.randn(batch, channels, height, width, generator=generator) * uniform(0.01, 0.05, batch, 1, 1, 1)
    for b in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            cy = height / 2 + float(torch.randn(1, generator=generator)) * height / 10
            cx = width / 2 + float(torch.randn(1, generator=generator)) * width / 10
            n, r_e, q, theta = (
                float(uniform(0.5, 4)),
                float(uniform(1.5, 8)),
                float(uniform(0.4, 1)),
                float(uniform(0, math.pi)),
            )
            dy, dx = yy - cy, xx - cx
            major = dx * math.cos(theta) + dy * math.sin(theta)
            minor = (-dx * math.sin(theta) + dy * math.cos(theta)) / q
            radius = torch.sqrt(major**2 + minor**2)
            profile = torch.exp(-(2 * n - 1 / 3) * (radius / r_e) ** (1 / n))
            flux[b] += uniform(1, 10) * uniform(0.3, 1.2, channels, 1, 1) * profile
    return flux * (100.0 if bands[0].startswith("HSC") else 1.0)


@pytest.fixture(scope="module")
def image_reference_small():
    """Small reference ``aion.codecs.ImageCodec`` with random weights (see :func:`image_randomize_reference`)."""
    import aion.codecs

    torch.manual_seed(1234)
    return image_randomize_reference(aion.codecs.ImageCodec(**IMAGE_SMALL_CONFIG), seed=1234)


@pytest.fixture(scope="module")
def image_checkpoint_small(image_reference_small, tmp_path_factory):
    """Directory in the aion-base hub layout, written by the reference's own ``save_pretrained``."""
    import aion.modalities

    root = tmp_path_factory.mktemp("image_checkpoint")
    image_reference_small.save_pretrained(root, modality=aion.modalities.LegacySurveyImage)
    return root


# ---------------------------------------------------------------------------------------------- scalar-field codec

#: Small scalar-field codec for the default test run (the paper's: encoder_output_dim=512, res_hidden_dims=64...).
SEGMAP_SMALL_CONFIG = {"encoder_output_dim": 16, "embedding_dim": 4, "res_hidden_dims": 8, "num_res_layers": 2}


def segmap_randomize_reference(codec: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Makes a freshly initialised reference scalar-field codec a sensitive test subject.

    BatchNorm layers get random statistics and affines (fresh ones are the identity). A random encoder's output
    barely varies between inputs, so the pre-quantization projection is scaled up 200x and re-centred on a
    calibration batch: latents then spread over ~100 of the 1000 FSQ codes, many near a rounding boundary.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in codec.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(shape, generator=generator))
                module.weight.copy_(1 + 0.2 * torch.randn(shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(shape, generator=generator))
        codec.eval()
        features = codec.encoder(segmap_make_field(4, seed=seed).unsqueeze(1)).mean(dim=(0, 2, 3))
        weight = codec.encode_proj.weight.mul_(200.0)
        codec.encode_proj.bias.copy_(-(weight[:, :, 0, 0] @ features))
    return codec


def segmap_make_field(batch: int, height: int = 96, width: int = 96, seed: int = 0) -> torch.Tensor:
    """Maps (B, H, W) in [0, 1] like the paper's training mix (§4.4.1).

    Even rows: Tractor-style object masks, filled ellipses with values from {0.2, 0.4, 0.6, 0.8, 1.0} on 0.
    Odd rows: smooth grey-scale galaxy images with noise, clipped to [0, 1].
    """
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    field = torch.zeros(batch, height, width)
    for b in range(batch):
        for _ in range(int(torch.randint(2, 7, (1,), generator=generator))):
            cy, cx = (
                float(torch.rand(1, generator=generator)) * height,
                float(torch.rand(1, generator=generator)) * width,
            )
            a = 2 + 12 * float(torch.rand(1, generator=generator))
            q, theta = (
                0.3 + 0.7 * float(torch.rand(1, generator=generator)),
                math.pi * float(torch.rand(1, generator=generator)),
            )
            dy, dx = yy - cy, xx - cx
            major = dx * math.cos(theta) + dy * math.sin(theta)
            minor = (-dx * math.sin(theta) + dy * math.cos(theta)) / q
            inside = (major**2 + minor**2) <= a**2
            if b % 2 == 0:
                value = 0.2 * int(torch.randint(1, 6, (1,), generator=generator))
                field[b] = torch.where(inside, torch.full_like(field[b], value), field[b])
            else:
                field[b] += float(torch.rand(1, generator=generator)) * torch.exp(-(major**2 + minor**2) / (2 * a**2))
        if b % 2 == 1:
            field[b] += 0.02 * torch.randn(height, width, generator=generator)
    return field.clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def segmap_reference_small():
    """Small reference ``aion.codecs.ScalarFieldCodec`` with random weights (see :func:`segmap_randomize_reference`)."""
    import aion.codecs

    torch.manual_seed(4321)
    return segmap_randomize_reference(aion.codecs.ScalarFieldCodec(**SEGMAP_SMALL_CONFIG), seed=4321)


@pytest.fixture(scope="module")
def segmap_checkpoint_small(segmap_reference_small, tmp_path_factory):
    """Directory in the aion-base hub layout, written by the reference's own ``save_pretrained``."""
    import aion.modalities

    root = tmp_path_factory.mktemp("segmap_checkpoint")
    segmap_reference_small.save_pretrained(root, modality=aion.modalities.LegacySurveySegmentationMap)
    return root
